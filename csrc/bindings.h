// The one binding convention of pyslice._C, shared by the op files (csrc/<op>.cpp).
//
// Every array reaches C++ as a pyslice._C.Tensor: a view (data address, shape, strides, dtype,
// device type and index) that pyslice/_native.py builds from a torch tensor, CPU and CUDA alike.
// An op function takes views and scalars, the same ones in the same order on every device; the
// CUDA function takes the current stream (an int) last. Views are validated here, and only here
// (Signature): dtype, shape against the op's pattern, C-contiguity, alignment, device, and that an
// output shares no memory with another view. Every failure is a TypeError/ValueError naming the
// argument. What a view points to is checked by the op where the host can read it (index tables
// on the CPU); CUDA pointers are confirmed to be device memory of the view's device.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <deque>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "pyslice/limits.h"

namespace pyslice {
namespace py = pybind11;

// One per file; called from PYBIND11_MODULE in csrc/module.cpp.
void register_tensor(py::module_& m);  // csrc/tensor.cpp: the Tensor class
void register_vonmises(py::module_& m);
void register_energy(py::module_& m);
void register_build(py::module_& m);
void register_metropolis(py::module_& m);

// ---- the tensor view ---------------------------------------------------------------------------

enum class DType : uint8_t { kBool, kUInt8, kInt32, kInt64, kFloat32, kFloat64 };
enum class Device : uint8_t { kCPU, kCUDA };

constexpr int kMaxDims = 4;

const char* dtype_name(DType dtype);
const char* device_name(Device device);
int64_t itemsize(DType dtype);

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::kFloat32; }
template <>
constexpr DType dtype_of<double>() { return DType::kFloat64; }

// pyslice._C.Tensor. Strides count elements (torch's convention). Built by Python through its
// constructor (csrc/tensor.cpp), which checks the description itself; immutable afterwards.
struct Tensor {
  uintptr_t data = 0;
  DType dtype = DType::kFloat32;
  Device device = Device::kCPU;
  int device_index = -1;  // -1 on the CPU
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  int64_t strides[kMaxDims] = {0, 0, 0, 0};

  int64_t numel() const;
  bool contiguous() const;  // C order; size-1 and empty dimensions may have any stride
  std::string shape_string() const;
  std::string device_string() const;

  template <typename T>
  T* ptr() const {
    return reinterpret_cast<T*>(data);
  }
};

// ---- validation --------------------------------------------------------------------------------

// What an op expects of one view beyond its dtype and shape.
struct Expect {
  bool output = false;    // written by the op: may share memory with no other view...
  bool in_place = false;  // ...but for an input that is this very view (row-wise in-place update)
  bool host = false;      // a small host table read by the launcher, also for CUDA functions
  int64_t alignment = 0;  // bytes, when stricter than the dtype's
};

constexpr Expect kOutput{/*output=*/true};
constexpr Expect kInPlace{/*output=*/true, /*in_place=*/true};
constexpr Expect kHostInput{/*output=*/false, /*in_place=*/false, /*host=*/true};
// Scratch memory (uint8) that the adapter allocates: 8-byte aligned for the doubles carved from it.
constexpr Expect kWorkspace{/*output=*/true, /*in_place=*/false, /*host=*/false, /*alignment=*/8};

// The views of one call, checked against the op's expectations in order. A shape pattern lists
// the dimensions, separated by spaces: a number is exact, an upper-case letter names a dimension
// that every view of the call must agree on (bound at its first use), '*' is free. E.g. "B N 3",
// then "B 5"; dim('B') reads a bound size back.
class Signature {
 public:
  Signature(const char* op, Device device) : op_(op), device_(device) {}

  // The view `value`, named `name` in messages: a pyslice._C.Tensor of one of `dtypes`, whose
  // shape matches `pattern`, C-contiguous, aligned, non-null unless empty, on this call's device
  // (on the CPU when expect.host) and on the same CUDA device as every other view.
  Tensor tensor(py::handle value, const char* name, std::initializer_list<DType> dtypes,
                const char* pattern, Expect expect = {});

  // The dtype of `value` if it is a view, so that an op can dispatch before checking it (the
  // check itself comes with tensor()). TypeError naming `name` when it is no view.
  static DType dtype(py::handle value, const char* name);

  int64_t dim(char dim) const;

  // The CUDA device of this call's views (a CUDA function's views must all share one).
  int cuda_device() const;

 private:
  struct Seen {
    Tensor view;
    const char* name;
    Expect expect;
  };
  void check_shape(const Tensor& t, const char* name, const char* pattern);
  void check_disjoint(const Tensor& t, const char* name, Expect expect);

  const char* op_;
  Device device_;
  int cuda_device_ = -1;
  const char* cuda_first_ = nullptr;
  int64_t dims_[26] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                       -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
  std::vector<Seen> seen_;
};

// ---- scalars -----------------------------------------------------------------------------------

namespace args {

std::string type_name(py::handle value);
std::string repr_of(py::handle value);

// An int (or anything with __index__, not a bool) in [0, max_value]; `range` describes the
// interval in messages, e.g. "[0, 2**32)".
uint64_t to_uint64(py::handle value, const char* name, uint64_t max_value, const char* range);
// An int in [min_value, 2**63).
int64_t to_int64(py::handle value, const char* name, int64_t min_value);
// A Python bool or numpy.bool_.
bool to_bool(py::handle value, const char* name);
// A real number (int or float); finite, and > 0 when `positive`.
double to_double(py::handle value, const char* name, bool positive);
// A cudaStream_t given as an int (torch.cuda.current_stream().cuda_stream; 0: the legacy stream).
void* to_stream(py::handle value);

}  // namespace args

// ---- registration ------------------------------------------------------------------------------

constexpr bool kCudaCompiled =
#if defined(PYSLICE_WITH_CUDA)
    true;
#else
    false;
#endif

// A docstring that lives as long as the module (pybind11 keeps the pointer).
inline const char* keep_doc(std::string text) {
  static std::deque<std::string> docs;
  docs.push_back(std::move(text));
  return docs.back().c_str();
}

// Registers <name>_cpu(arguments...) and <name>_cuda(arguments..., stream), both calling
// impl(device, stream, arguments...) (stream: the cudaStream_t, nullptr on the CPU): one argument
// list, one order and one set of checks for both devices. `params` types the arguments for the
// docstrings' first line (pybind11's own would say "object": arguments are checked by hand).
template <typename... Objects, typename... Names>
void def_op(py::module_& m, const char* name, void (*impl)(Device, void*, Objects...),
            const char* params, const char* doc, Names... names) {
  static_assert(sizeof...(Objects) == sizeof...(Names), "one name per argument");
  const std::string base(name);
  if (*doc == '\n') ++doc;  // a raw string that starts on its own line
  m.def((base + "_cpu").c_str(),
        [impl](Objects... arguments) { impl(Device::kCPU, nullptr, arguments...); },
        py::arg(names)...,
        keep_doc(base + "_cpu(" + params + ") -> None\n\n" + doc + "\nCPU tensors; runs " +
                 "in parallel (OpenMP) without the GIL."));
  m.def((base + "_cuda").c_str(),
        [impl](Objects... arguments, const py::object& stream) {
          if (!kCudaCompiled) throw std::runtime_error("pyslice._C was built without CUDA");
          impl(Device::kCUDA, args::to_stream(stream), arguments...);
        },
        py::arg(names)..., py::arg("stream"),
        keep_doc(base + "_cuda(" + params + ", stream: int) -> None\n\n" + doc +
                 "\nCUDA tensors, all on one device; launches on `stream` (an int cudaStream_t, "
                 "0: the legacy default stream) and returns without synchronising. "
                 "RuntimeError when pyslice._C was built without CUDA or a CUDA call fails."));
}

}  // namespace pyslice
