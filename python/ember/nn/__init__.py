"""ember.nn: modules, layers, losses, functional forms, initialisation
(torch.nn's names and behaviour)."""
from ember.nn.parameter import Parameter
from ember.nn import functional
from ember.nn import init
from ember.nn.modules import *  # noqa: F401,F403
from ember.nn.modules import Module, Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict
from ember.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from ember.nn.modules.layers import __all__ as _layers_all
from ember.nn.modules.loss import __all__ as _loss_all
from ember.nn import utils
from ember.nn import parallel

__all__ = (["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList",
            "ParameterDict", "functional", "init", "utils", "parallel"] + _layers_all + _loss_all)
