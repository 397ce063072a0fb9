// Autograd behaviour of the ops: of the mutating ones (perturb_, sample_, sparse_zscore_,
// cma_cov_update_), one pair of boxed kernels for all; of the functional ones (sparse_zscore,
// mask_score, quantize_rows), one kernel that records nothing.
//
// Note [Functional ops have no derivative]
// sparse_zscore selects and standardizes, mask_score ranks, quantize_rows rounds: none has a
// useful derivative, and none is given one. Without an Autograd kernel, torch's fallback gave
// their outputs a grad_fn whose backward left the inputs' .grad as None (with a warning about
// silently incorrect results). Their Autograd kernel now runs them below autograd, as torch
// runs argmax: the outputs never require grad, and nothing pretends to be differentiable.
//
// Note [Mutating ops and autograd]
// A perturbation is not part of any computation graph: optimizers apply it to parameters under
// torch.no_grad(). Two things still matter to autograd, and torch's generic fallbacks handle
// neither for ops that return nothing (they bump the version of mutable *returns* only):
//   Autograd: with grad mode on, mutating a tensor that requires grad is refused with a clear
//     error, as torch's own in-place ops refuse a leaf;
//   ADInplaceOrView: the version counter of every mutated tensor is bumped, so a backward pass
//     through a tensor that was saved and then perturbed fails loudly instead of being wrong.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace sharpzo {
namespace {

// Calls fn(argument, tensor) for every tensor argument the schema marks as mutable (a!).
template <typename Fn>
void for_each_mutated_tensor(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                             Fn&& fn) {
  const auto& schema = op.schema();
  const size_t n = schema.arguments().size();
  const size_t start = stack.size() - n;
  for (size_t i = 0; i < n; ++i) {
    const c10::IValue& value = stack[start + i];
    if (value.isTensor() && schema.is_mutable({c10::SchemaArgType::input, i})) {
      fn(schema.arguments()[i], value.toTensor());
    }
  }
}

void mutating_op_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                          torch::jit::Stack* stack) {
  if (at::GradMode::is_enabled()) {
    for_each_mutated_tensor(op, *stack, [&](const c10::Argument& arg, const at::Tensor& t) {
      TORCH_CHECK(!t.requires_grad(), op.schema().name(), ": ", arg.name(),
                  " requires grad; perturbations are not differentiable, call it under "
                  "torch.no_grad()");
    });
  }
  at::AutoDispatchBelowAutograd guard;
  op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
}

void mutating_op_inplace_or_view(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                                 torch::jit::Stack* stack) {
  std::vector<at::Tensor> mutated;
  for_each_mutated_tensor(op, *stack,
                          [&](const c10::Argument&, const at::Tensor& t) { mutated.push_back(t); });
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& t : mutated) t.unsafeGetTensorImpl()->bump_version();
}

constexpr const char* kMutatingOps[] = {"perturb_", "sample_", "sparse_zscore_",
                                        "cma_cov_update_"};

// Note [Functional ops have no derivative]
void non_differentiable_op(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                           torch::jit::Stack* stack) {
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

constexpr const char* kFunctionalOps[] = {"sparse_zscore", "mask_score", "quantize_rows"};

}  // namespace
}  // namespace sharpzo

TORCH_LIBRARY_IMPL(sharpzo, Autograd, m) {
  for (const char* op : sharpzo::kMutatingOps) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&sharpzo::mutating_op_autograd>());
  }
  for (const char* op : sharpzo::kFunctionalOps) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&sharpzo::non_differentiable_op>());
  }
}

TORCH_LIBRARY_IMPL(sharpzo, ADInplaceOrView, m) {
  for (const char* op : sharpzo::kMutatingOps) {
    m.impl(op,
           torch::CppFunction::makeFromBoxedFunction<&sharpzo::mutating_op_inplace_or_view>());
  }
}
