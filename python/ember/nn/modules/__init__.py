from ember.nn.modules.module import Module
from ember.nn.modules.container import (Sequential, ModuleList, ModuleDict, ParameterList,
                                        ParameterDict)
from ember.nn.modules.layers import *  # noqa: F401,F403
from ember.nn.modules.loss import *  # noqa: F401,F403
