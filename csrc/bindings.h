// Shared by the binding files (csrc/<op>.cpp) and csrc/module.cpp: the registration functions and
// the argument checks. Every check raises a Python TypeError/ValueError naming the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace pyslice {
namespace py = pybind11;

// One per op file; called from PYBIND11_MODULE in csrc/module.cpp.
void register_vonmises(py::module_& m);
void register_energy(py::module_& m);
void register_build(py::module_& m);
void register_metropolis(py::module_& m);

namespace args {

inline std::string type_name(py::handle value) { return Py_TYPE(value.ptr())->tp_name; }

inline std::string repr_of(py::handle value) { return py::repr(value).cast<std::string>(); }

// A Python int or anything with __index__ (numpy integers), but not a bool.
inline py::int_ as_index(py::handle value, const char* name) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) {
    throw py::type_error(std::string(name) + " must be an int, got " + type_name(value));
  }
  PyObject* index = PyNumber_Index(value.ptr());
  if (index == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::int_>(index);
}

// An int in [0, max_value]; `range` describes the interval for the message, e.g. "[0, 2**32)".
inline uint64_t to_uint64(py::handle value, const char* name, uint64_t max_value,
                          const char* range) {
  const py::int_ index = as_index(value, name);
  const unsigned long long result = PyLong_AsUnsignedLongLong(index.ptr());
  if ((result == static_cast<unsigned long long>(-1) && PyErr_Occurred()) || result > max_value) {
    PyErr_Clear();
    throw py::value_error(std::string(name) + " must be an int in " + range + ", got " +
                          repr_of(value));
  }
  return static_cast<uint64_t>(result);
}

// An int in [min_value, 2**63).
inline int64_t to_int64(py::handle value, const char* name, int64_t min_value) {
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

// A Python bool or numpy.bool_.
inline bool to_bool(py::handle value, const char* name) {
  if (PyBool_Check(value.ptr())) return value.ptr() == Py_True;
  const py::object numpy_bool = py::module_::import("numpy").attr("bool_");
  if (py::isinstance(value, numpy_bool)) return value.cast<bool>();
  throw py::type_error(std::string(name) + " must be a bool, got " + type_name(value));
}

inline std::string shape_string(const py::array& array) {
  std::string text = "(";
  for (py::ssize_t d = 0; d < array.ndim(); ++d) {
    if (d > 0) text += ", ";
    text += std::to_string(array.shape(d));
  }
  return text + (array.ndim() == 1 ? ",)" : ")");
}

// A numpy array of `dtype` (named `dtype_name` in messages) with `ndim` dimensions, C-contiguous,
// aligned, native byte order, and writable when `writable`. Never converts: an array of another
// dtype is an error, not a silent copy.
inline py::array typed_array(py::handle value, const char* name, const py::dtype& dtype,
                             const char* dtype_name, py::ssize_t ndim, bool writable) {
  if (!py::isinstance<py::array>(value)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of dtype " + dtype_name +
                         ", got " + type_name(value));
  }
  auto array = py::reinterpret_borrow<py::array>(value);
  if (!array.dtype().equal(dtype)) {
    throw py::type_error(std::string(name) + " must have dtype " + dtype_name +
                         " (native byte order), got " + py::str(array.dtype()).cast<std::string>());
  }
  if (array.ndim() != ndim) {
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                          " dimension(s), got shape " + shape_string(array));
  }
  if ((array.flags() & py::array::c_style) == 0) {
    throw py::value_error(std::string(name) +
                          " must be C-contiguous (numpy.ascontiguousarray makes a copy), got "
                          "strides that are not");
  }
  if ((array.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) == 0) {
    throw py::value_error(std::string(name) + " must be aligned to " +
                          std::to_string(dtype.itemsize()) + " bytes");
  }
  if (writable && !array.writeable()) {
    throw py::value_error(std::string(name) + " must be writable");
  }
  return array;
}

inline py::array float32_array(py::handle value, const char* name, py::ssize_t ndim,
                               bool writable) {
  return typed_array(value, name, py::dtype::of<float>(), "float32", ndim, writable);
}

inline py::array float64_array(py::handle value, const char* name, py::ssize_t ndim,
                               bool writable) {
  return typed_array(value, name, py::dtype::of<double>(), "float64", ndim, writable);
}

inline py::array int64_array(py::handle value, const char* name, py::ssize_t ndim,
                             bool writable) {
  return typed_array(value, name, py::dtype::of<int64_t>(), "int64", ndim, writable);
}

// True when `value` is a numpy array of dtype float64 (else it is checked as float32).
inline bool is_float64_array(py::handle value) {
  return py::isinstance<py::array>(value) &&
         py::reinterpret_borrow<py::array>(value).dtype().equal(py::dtype::of<double>());
}

// True when the byte ranges of the two arrays overlap.
inline bool overlaps(const py::array& a, const py::array& b) {
  const auto* a0 = static_cast<const char*>(a.data());
  const auto* b0 = static_cast<const char*>(b.data());
  const py::ssize_t a_bytes = a.nbytes();
  const py::ssize_t b_bytes = b.nbytes();
  if (a_bytes == 0 || b_bytes == 0) return false;
  return a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

}  // namespace args
}  // namespace pyslice
