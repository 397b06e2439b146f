# CUDA support: -DEMBER_CUDA=AUTO (default) | ON | OFF.
#
#   AUTO  builds CUDA support when nvcc is found, else goes on without it.
#   ON    requires it: no nvcc (or no cuBLAS) is a configure error.
#   OFF   builds nothing CUDA (not even a probe for nvcc).
#
# Included from the top-level CMakeLists.txt after the global compile
# options and before the modules. Sets, for the modules:
#   EMBER_HAVE_CUDA   ON when CUDA support is built
#   EMBER_HAVE_CUDNN  ON when cuDNN was found too (convolution, pooling,
#                     batch norm on the GPU; without it those ops report
#                     "no cuDNN in this build")
#   EMBER_HAVE_NCCL   ON when NCCL was found too (the "nccl" backend)
#   EMBER_CUDA_LIBS   what ember_core links (cudart, cuBLAS, cuBLASLt,
#                     cuDNN when found)
#   EMBER_NCCL_LIBS   what ember_comm links for the nccl backend
#
# Device code targets sm_90 (H100/H200) as SASS plus compute_90 PTX, which
# the driver JIT-compiles for any newer GPU ("90" in CMAKE_CUDA_ARCHITECTURES
# means both). Override with -DCMAKE_CUDA_ARCHITECTURES=... .
#
# The host compiler is the C compiler of the build (gcc 12 here); nvcc 13
# supports it, so no -allow-unsupported-compiler is needed. Should a newer
# gcc be refused, configure with
#   -DCMAKE_CUDA_FLAGS=-allow-unsupported-compiler
# (nvcc then warns instead of failing; ember's device code uses no host
# compiler extensions, so this is safe in practice).

set(EMBER_CUDA "AUTO" CACHE STRING "Build CUDA support: AUTO, ON or OFF")
set_property(CACHE EMBER_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${EMBER_CUDA}" _em_cuda_mode)
if(NOT _em_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "EMBER_CUDA must be AUTO, ON or OFF (got '${EMBER_CUDA}')")
endif()

set(EMBER_HAVE_CUDA OFF)
set(EMBER_HAVE_CUDNN OFF)
set(EMBER_HAVE_NCCL OFF)
set(EMBER_CUDA_LIBS "")
set(EMBER_NCCL_LIBS "")

if(NOT _em_cuda_mode STREQUAL "OFF")
  # Find nvcc: CUDACXX / CMAKE_CUDA_COMPILER first, then PATH, then the
  # usual install location.
  if(NOT CMAKE_CUDA_COMPILER)
    if(DEFINED ENV{CUDACXX})
      set(CMAKE_CUDA_COMPILER "$ENV{CUDACXX}")
    else()
      find_program(EMBER_NVCC nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME
                   PATH_SUFFIXES bin)
      if(EMBER_NVCC)
        set(CMAKE_CUDA_COMPILER "${EMBER_NVCC}")
      endif()
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER AND EXISTS "${CMAKE_CUDA_COMPILER}")
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    set(CMAKE_CUDA_HOST_COMPILER "${CMAKE_C_COMPILER}" CACHE FILEPATH "nvcc host compiler")
    enable_language(CUDA)
    find_package(CUDAToolkit)
  endif()

  if(CMAKE_CUDA_COMPILER_LOADED AND CUDAToolkit_FOUND AND TARGET CUDA::cublas)
    set(EMBER_HAVE_CUDA ON)
  elseif(_em_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR
      "EMBER_CUDA=ON but the CUDA toolkit was not found (need nvcc, the CUDA runtime and "
      "cuBLAS; looked on PATH and in /usr/local/cuda/bin). Install the toolkit, point "
      "CUDACXX or -DCMAKE_CUDA_COMPILER at nvcc, or configure with -DEMBER_CUDA=OFF.")
  else()
    message(STATUS "ember: CUDA toolkit not found; building without CUDA support")
  endif()
endif()

if(EMBER_HAVE_CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  # The global options (-Wall -Werror -fvisibility=hidden, sanitizers) are
  # gcc options: keep them for C/C++ and give nvcc its own set. The host
  # side of .cu files builds with the same warnings, as errors.
  get_directory_property(_em_opts COMPILE_OPTIONS)
  set(_em_wrapped "")
  foreach(o ${_em_opts})
    list(APPEND _em_wrapped "$<$<COMPILE_LANGUAGE:C,CXX>:${o}>")
  endforeach()
  set_directory_properties(PROPERTIES COMPILE_OPTIONS "${_em_wrapped}")
  add_compile_options(
    "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-fvisibility=hidden,-fno-strict-aliasing>"
    "$<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>"
    "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Werror>")
  set(CMAKE_CUDA_FLAGS_RELEASE "-O3 -g")
  set(CMAKE_CUDA_FLAGS_DEBUG "-O0 -g")

  # The host side of .cu files is C++: programs linked by the C compiler
  # need its runtime (static-initialisation guards of the kernel stubs).
  set(EMBER_CUDA_LIBS CUDA::cudart CUDA::cublas CUDA::cublasLt stdc++)

  find_path(EMBER_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(EMBER_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(EMBER_CUDNN_INCLUDE AND EMBER_CUDNN_LIBRARY)
    set(EMBER_HAVE_CUDNN ON)
    list(APPEND EMBER_CUDA_LIBS ${EMBER_CUDNN_LIBRARY})
  else()
    message(STATUS "ember: cuDNN not found; GPU convolution/pooling/batch norm left out")
  endif()

  find_path(EMBER_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(EMBER_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(EMBER_NCCL_INCLUDE AND EMBER_NCCL_LIBRARY)
    set(EMBER_HAVE_NCCL ON)
    set(EMBER_NCCL_LIBS ${EMBER_NCCL_LIBRARY} CUDA::cudart)
  else()
    message(STATUS "ember: NCCL not found; the nccl process-group backend is left out")
  endif()

  message(STATUS "ember: CUDA ${CUDAToolkit_VERSION} (nvcc ${CMAKE_CUDA_COMPILER}), "
                 "architectures ${CMAKE_CUDA_ARCHITECTURES}, cuDNN ${EMBER_HAVE_CUDNN}, "
                 "NCCL ${EMBER_HAVE_NCCL}")
endif()
