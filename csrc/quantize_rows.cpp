#include "quantize_rows.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace sharpzo {

std::tuple<at::Tensor, at::Tensor> quantize_rows_with(const at::Tensor& x, int64_t qmax,
                                                      QuantizeRowsLauncher launch) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat,
                   "quantize_rows: x must be a float32 tensor, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 2, "quantize_rows: x must be 2-D (rows, columns), got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(qmax >= 1 && qmax <= 127, "quantize_rows: qmax must be in [1, 127], got ",
                    qmax);
  QuantizeRowsJob job{x.contiguous(), at::empty(x.sizes(), x.options().dtype(at::kByte)),
                      at::empty({x.size(0), 1}, x.options()), static_cast<float>(qmax)};
  if (x.numel() > 0) launch(job);
  else job.scale.fill_(1.0);
  return {job.q, job.scale};
}

}  // namespace sharpzo
