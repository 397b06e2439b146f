"""ember.nn.Parameter: a Tensor that a Module registers as a parameter."""
import ember

__all__ = ["Parameter"]


class Parameter(ember.Tensor):
    """A tensor that is a module parameter, as torch.nn.Parameter.

    Assigning a Parameter to a Module attribute registers it; it requires
    grad unless ``requires_grad=False``. ``Parameter(t)`` shares ``t``'s
    storage (it is a detached alias of ``t``)."""

    def __new__(cls, data=None, requires_grad=True):
        if data is None:
            data = ember.empty(0)
        return ember.Tensor._make_subclass(cls, data, requires_grad)

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(self.data.clone(), self.requires_grad)
        memo[id(self)] = result
        return result

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    __str__ = __repr__

    def __reduce_ex__(self, proto):
        return (_rebuild_parameter, (self.data, self.requires_grad))


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)
