// The tensor view pyslice._C.Tensor, its validation (Signature) and the scalar conversions: the one
// place where _C checks what Python hands it (csrc/bindings.h says what is checked).
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "device.h"

namespace pyslice {

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  int64_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, "bool", 1},       {DType::kUInt8, "uint8", 1},
    {DType::kInt32, "int32", 4},     {DType::kInt64, "int64", 8},
    {DType::kFloat32, "float32", 4}, {DType::kFloat64, "float64", 8},
};

std::string join_dtypes(std::initializer_list<DType> dtypes) {
  std::string text;
  for (DType d : dtypes) {
    if (!text.empty()) text += " or ";
    text += dtype_name(d);
  }
  return text;
}

std::string shape_text(const int64_t* shape, int ndim) {
  std::string text = "(";
  for (int d = 0; d < ndim; ++d) {
    if (d > 0) text += ", ";
    text += std::to_string(shape[d]);
  }
  return text + (ndim == 1 ? ",)" : ")");
}

// [first, last) byte range of a view (empty views have none).
std::pair<uintptr_t, uintptr_t> byte_range(const Tensor& t) {
  if (t.numel() == 0) return {0, 0};
  int64_t last = 0;
  for (int d = 0; d < t.ndim; ++d) last += (t.shape[d] - 1) * t.strides[d];
  return {t.data, t.data + static_cast<uintptr_t>((last + 1) * itemsize(t.dtype))};
}

}  // namespace

const char* dtype_name(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info.name;
  }
  return "unknown";
}

const char* device_name(Device device) { return device == Device::kCUDA ? "cuda" : "cpu"; }

int64_t itemsize(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info.size;
  }
  return 1;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

bool Tensor::contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

std::string Tensor::shape_string() const { return shape_text(shape, ndim); }

std::string Tensor::device_string() const {
  return device == Device::kCUDA ? "cuda:" + std::to_string(device_index) : "cpu";
}

// ---- Signature ---------------------------------------------------------------------------------

DType Signature::dtype(py::handle value, const char* name) {
  if (!py::isinstance<Tensor>(value)) {
    throw py::type_error(std::string(name) +
                         " must be a pyslice._C.Tensor (pyslice._native.view(tensor)), got " +
                         args::type_name(value));
  }
  return value.cast<const Tensor&>().dtype;
}

Tensor Signature::tensor(py::handle value, const char* name, std::initializer_list<DType> dtypes,
                         const char* pattern, Expect expect) {
  const DType dtype = Signature::dtype(value, name);
  const Tensor t = value.cast<const Tensor&>();
  bool dtype_ok = false;
  for (DType d : dtypes) dtype_ok = dtype_ok || d == dtype;
  if (!dtype_ok) {
    throw py::type_error(std::string(name) + " must have dtype " + join_dtypes(dtypes) + ", got " +
                         dtype_name(dtype));
  }
  check_shape(t, name, pattern);
  const Device wanted = expect.host ? Device::kCPU : device_;
  if (t.device != wanted) {
    throw py::value_error(std::string(name) + " must be on the " + device_name(wanted) + " (" +
                          op_ + (device_ == Device::kCUDA ? "_cuda" : "_cpu") + "), got " +
                          t.device_string());
  }
  if (!t.contiguous()) {
    throw py::value_error(std::string(name) + " must be C-contiguous (tensor.contiguous()), got "
                          "shape " + t.shape_string() + " with strides " +
                          shape_text(t.strides, t.ndim));
  }
  const int64_t alignment = expect.alignment > itemsize(dtype) ? expect.alignment : itemsize(dtype);
  if (t.numel() > 0 && t.data == 0) {
    throw py::value_error(std::string(name) + " must not point to address 0 (null)");
  }
  if (t.data % static_cast<uintptr_t>(alignment) != 0) {
    throw py::value_error(std::string(name) + " must be aligned to " + std::to_string(alignment) +
                          " bytes");
  }
  if (t.device == Device::kCUDA) {
    if (cuda_first_ == nullptr) {
      cuda_first_ = name;
      cuda_device_ = t.device_index;
    } else if (t.device_index != cuda_device_) {
      throw py::value_error(std::string(name) + " is on " + t.device_string() + ", " +
                            cuda_first_ + " on cuda:" + std::to_string(cuda_device_) +
                            ": every tensor must be on one device");
    }
  }
  check_disjoint(t, name, expect);
  seen_.push_back({t, name, expect});
  return t;
}

void Signature::check_shape(const Tensor& t, const char* name, const char* pattern) {
  // Parse the pattern into (kind, value) per dimension: 'n' number, 'd' named, '*' free.
  char kinds[kMaxDims];
  int64_t values[kMaxDims];
  int ndim = 0;
  for (const char* p = pattern; *p != '\0';) {
    if (*p == ' ') {
      ++p;
      continue;
    }
    if (ndim == kMaxDims) throw std::logic_error("shape pattern has too many dimensions");
    if (*p >= 'A' && *p <= 'Z') {
      kinds[ndim] = 'd';
      values[ndim] = *p - 'A';
      ++p;
    } else if (*p == '*') {
      kinds[ndim] = '*';
      values[ndim] = 0;
      ++p;
    } else {
      int64_t number = 0;
      while (*p >= '0' && *p <= '9') number = number * 10 + (*p++ - '0');
      kinds[ndim] = 'n';
      values[ndim] = number;
    }
    ++ndim;
  }
  // What was expected, with the sizes known so far: "(B, N, 3) with N = 892".
  auto expected = [&]() {
    std::string text = "(";
    std::string known;
    for (int d = 0; d < ndim; ++d) {
      if (d > 0) text += ", ";
      if (kinds[d] == 'n') {
        text += std::to_string(values[d]);
      } else if (kinds[d] == '*') {
        text += "*";
      } else {
        const char letter = static_cast<char>('A' + values[d]);
        text += letter;
        if (dims_[values[d]] >= 0 && known.find(letter) == std::string::npos) {
          known += (known.empty() ? " with " : ", ") + std::string(1, letter) + " = " +
                   std::to_string(dims_[values[d]]);
        }
      }
    }
    return text + (ndim == 1 ? ",)" : ")") + known;
  };
  bool ok = t.ndim == ndim;
  for (int d = 0; ok && d < ndim; ++d) {
    if (kinds[d] == 'n') ok = t.shape[d] == values[d];
    if (kinds[d] == 'd' && dims_[values[d]] >= 0) ok = t.shape[d] == dims_[values[d]];
  }
  if (!ok) {
    throw py::value_error(std::string(name) + " must have shape " + expected() + ", got " +
                          t.shape_string());
  }
  for (int d = 0; d < ndim; ++d) {
    if (kinds[d] == 'd' && dims_[values[d]] < 0) dims_[values[d]] = t.shape[d];
  }
}

void Signature::check_disjoint(const Tensor& t, const char* name, Expect expect) {
  const auto [lo, hi] = byte_range(t);
  if (lo == hi) return;
  for (const Seen& other : seen_) {
    if (!expect.output && !other.expect.output) continue;  // inputs may share memory
    if (other.view.device != t.device || other.view.device_index != t.device_index) continue;
    const auto [other_lo, other_hi] = byte_range(other.view);
    if (!(lo < other_hi && other_lo < hi)) continue;
    const bool same_view = lo == other_lo && hi == other_hi && t.dtype == other.view.dtype;
    const bool in_place = (expect.in_place && !other.expect.output) ||
                          (other.expect.in_place && !expect.output);
    if (same_view && in_place) continue;
    const bool later_output = expect.output;
    throw py::value_error(std::string(later_output ? name : other.name) +
                          " must not share memory with " + (later_output ? other.name : name));
  }
}

int64_t Signature::dim(char dim) const { return dims_[dim - 'A']; }

int Signature::cuda_device() const {
  if (cuda_first_ == nullptr) throw py::value_error(std::string(op_) + ": no CUDA tensor given");
#if defined(PYSLICE_WITH_CUDA)
  // The views say where their memory is; the runtime confirms it (a view built by hand could
  // describe host memory as device memory, and a kernel would then fault).
  std::vector<std::pair<const void*, const char*>> pointers;
  for (const Seen& seen : seen_) {
    if (seen.view.device == Device::kCUDA && seen.view.numel() > 0) {
      pointers.emplace_back(seen.view.ptr<const void>(), seen.name);
    }
  }
  check_device_pointers(cuda_device_, pointers);
#endif
  return cuda_device_;
}

// ---- scalars -----------------------------------------------------------------------------------

namespace args {

// "torch.Tensor", "numpy.ndarray", "list": the name a Python user would write.
std::string type_name(py::handle value) {
  const py::handle type = reinterpret_cast<PyObject*>(Py_TYPE(value.ptr()));
  const std::string name = py::str(type.attr("__qualname__"));
  const std::string module = py::str(type.attr("__module__"));
  return module == "builtins" ? name : module + "." + name;
}

std::string repr_of(py::handle value) { return py::repr(value).cast<std::string>(); }

namespace {

// A Python int or anything with __index__ (numpy integers), but not a bool.
py::int_ as_index(py::handle value, const char* name) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) {
    throw py::type_error(std::string(name) + " must be an int, got " + type_name(value));
  }
  PyObject* index = PyNumber_Index(value.ptr());
  if (index == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::int_>(index);
}

}  // namespace

uint64_t to_uint64(py::handle value, const char* name, uint64_t max_value, const char* range) {
  const py::int_ index = as_index(value, name);
  const unsigned long long result = PyLong_AsUnsignedLongLong(index.ptr());
  if ((result == static_cast<unsigned long long>(-1) && PyErr_Occurred()) || result > max_value) {
    PyErr_Clear();
    throw py::value_error(std::string(name) + " must be an int in " + range + ", got " +
                          repr_of(value));
  }
  return static_cast<uint64_t>(result);
}

int64_t to_int64(py::handle value, const char* name, int64_t min_value) {
  const py::int_ index = as_index(value, name);
  int overflow = 0;
  const long long result = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (result == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || result < min_value) {
    throw py::value_error(std::string(name) + " must be an int >= " + std::to_string(min_value) +
                          " (and < 2**63), got " + repr_of(value));
  }
  return static_cast<int64_t>(result);
}

bool to_bool(py::handle value, const char* name) {
  if (PyBool_Check(value.ptr())) return value.ptr() == Py_True;
  // numpy.bool_ without importing numpy: its type is named numpy.bool (numpy 2) or numpy.bool_.
  const std::string type = type_name(value);
  if (type == "numpy.bool" || type == "numpy.bool_") return PyObject_IsTrue(value.ptr()) == 1;
  throw py::type_error(std::string(name) + " must be a bool, got " + type);
}

double to_double(py::handle value, const char* name, bool positive) {
  if (PyBool_Check(value.ptr()) || !(PyFloat_Check(value.ptr()) || PyIndex_Check(value.ptr()) ||
                                     PyNumber_Check(value.ptr()))) {
    throw py::type_error(std::string(name) + " must be a real number, got " + type_name(value));
  }
  const double result = PyFloat_AsDouble(value.ptr());
  if (result == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  if (!std::isfinite(result) || (positive && !(result > 0.0))) {
    throw py::value_error(std::string(name) + " must be finite" + (positive ? " and > 0" : "") +
                          ", got " + repr_of(value));
  }
  return result;
}

void* to_stream(py::handle value) {
  const uint64_t stream = to_uint64(value, "stream", kMaxUint64, "[0, 2**64)");
  return reinterpret_cast<void*>(static_cast<uintptr_t>(stream));
}

}  // namespace args

// ---- the Python class --------------------------------------------------------------------------

namespace {

// An int of a shape or strides entry; the common case (a plain int) without pybind11's casts.
int64_t dimension(PyObject* item, const char* name) {
  if (PyLong_CheckExact(item)) {
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (overflow == 0 && value >= 0) return value;
  }
  return args::to_int64(item, name, 0);
}

// Fills t.shape or t.strides from a tuple or list of ints; returns its length.
int dimensions(const py::object& value, const char* name, int64_t* out) {
  if (!PyTuple_Check(value.ptr()) && !PyList_Check(value.ptr())) {
    throw py::type_error(std::string(name) + " must be a tuple of ints, got " +
                         args::type_name(value));
  }
  const py::object items = py::reinterpret_steal<py::object>(PySequence_Fast(value.ptr(), name));
  if (!items) throw py::error_already_set();
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(items.ptr());
  if (n > kMaxDims) {
    throw py::value_error(std::string(name) + " must have at most " + std::to_string(kMaxDims) +
                          " dimensions, got " + args::repr_of(value));
  }
  for (Py_ssize_t d = 0; d < n; ++d) {
    out[d] = dimension(PySequence_Fast_GET_ITEM(items.ptr(), d), name);
  }
  return static_cast<int>(n);
}

// True when the Python str `value` equals `text` (no allocation).
bool str_equals(const py::object& value, const char* text) {
  return PyUnicode_CompareWithASCIIString(value.ptr(), text) == 0;
}

Tensor make_tensor(const py::object& data, const py::object& shape, const py::object& strides,
                   const py::object& dtype, const py::object& device,
                   const py::object& device_index) {
  Tensor t;
  t.data = static_cast<uintptr_t>(args::to_uint64(data, "data", kMaxUint64, "[0, 2**64)"));
  t.ndim = dimensions(shape, "shape", t.shape);
  if (dimensions(strides, "strides", t.strides) != t.ndim) {
    throw py::value_error("strides must have one entry per dimension of shape " +
                          args::repr_of(shape) + ", got " + args::repr_of(strides));
  }
  if (!py::isinstance<py::str>(dtype)) {
    throw py::type_error("dtype must be a str, got " + args::type_name(dtype));
  }
  bool known = false;
  for (const DTypeInfo& info : kDTypes) {
    if (!known && str_equals(dtype, info.name)) {
      t.dtype = info.dtype;
      known = true;
    }
  }
  if (!known) {
    throw py::value_error("dtype must be one of bool, uint8, int32, int64, float32, float64, got " +
                          args::repr_of(dtype));
  }
  if (!py::isinstance<py::str>(device)) {
    throw py::type_error("device must be a str ('cpu' or 'cuda'), got " + args::type_name(device));
  }
  if (str_equals(device, "cpu")) {
    t.device = Device::kCPU;
    if (!device_index.is_none() && args::to_int64(device_index, "device_index", -1) > 0) {
      throw py::value_error("device_index must be None, -1 or 0 for the cpu, got " +
                            args::repr_of(device_index));
    }
    t.device_index = -1;
  } else if (str_equals(device, "cuda")) {
    t.device = Device::kCUDA;
    t.device_index = static_cast<int>(args::to_int64(device_index, "device_index", 0));
  } else {
    throw py::value_error("device must be 'cpu' or 'cuda', got " + args::repr_of(device));
  }
  // The view must describe memory that can exist (numel() and the byte ranges of the checks
  // must not overflow): counted in double, exact far beyond the 2**56 bound.
  double count = 1.0, extent = 0.0;
  for (int d = 0; d < t.ndim; ++d) {
    count *= static_cast<double>(t.shape[d]);
    if (t.shape[d] > 0) extent += static_cast<double>(t.shape[d] - 1) * t.strides[d];
  }
  constexpr double kLimit = 72057594037927936.0;  // 2**56 elements
  if (count > kLimit || (count > 0 && extent > kLimit)) {
    throw py::value_error("shape " + args::repr_of(shape) + " and strides " +
                          args::repr_of(strides) + " describe more memory than can exist");
  }
  return t;
}

}  // namespace

void register_tensor(py::module_& m) {
  py::class_<Tensor>(m, "Tensor", R"doc(Tensor(data: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str, device: str, device_index: int | None)

A view of a tensor's memory, what every function of pyslice._C takes instead of an array:
the address of its first element, its shape and strides (in elements, >= 0; at most 4
dimensions), its dtype ('bool', 'uint8', 'int32', 'int64', 'float32', 'float64') and its
device ('cpu', or 'cuda' with device_index). Build it with pyslice._native.view(tensor), which
also keeps the layout torch reports; the tensor must outlive the call it is passed to. The
functions check every view against what they expect and raise TypeError/ValueError naming the
argument.
)doc")
      .def(py::init(&make_tensor), py::arg("data"), py::arg("shape"), py::arg("strides"),
           py::arg("dtype"), py::arg("device"), py::arg("device_index") = py::none())
      .def_property_readonly("data", [](const Tensor& t) { return static_cast<uint64_t>(t.data); })
      .def_property_readonly("shape",
                             [](const Tensor& t) {
                               py::tuple shape(t.ndim);
                               for (int d = 0; d < t.ndim; ++d) shape[d] = t.shape[d];
                               return shape;
                             })
      .def_property_readonly("strides",
                             [](const Tensor& t) {
                               py::tuple strides(t.ndim);
                               for (int d = 0; d < t.ndim; ++d) strides[d] = t.strides[d];
                               return strides;
                             })
      .def_property_readonly("dtype", [](const Tensor& t) { return dtype_name(t.dtype); })
      .def_property_readonly("device", [](const Tensor& t) { return device_name(t.device); })
      .def_property_readonly("device_index",
                             [](const Tensor& t) -> py::object {
                               if (t.device == Device::kCPU) return py::none();
                               return py::int_(t.device_index);
                             })
      .def("__repr__", [](const Tensor& t) {
        return "pyslice._C.Tensor(shape=" + t.shape_string() + ", dtype=" +
               dtype_name(t.dtype) + ", device=" + t.device_string() + ")";
      });
}

}  // namespace pyslice
