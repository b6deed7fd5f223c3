// Scalar maths shared by every op's header: float/double overloads that resolve to the C
// functions on the host and on the device, pi, and the one angle wrap of the C++/CUDA code.
#pragma once
#include <cmath>

#include "pyslice/hd.h"

namespace pyslice {

PYSLICE_HD float sqrt_of(float x) { return sqrtf(x); }
PYSLICE_HD double sqrt_of(double x) { return sqrt(x); }
PYSLICE_HD float floor_of(float x) { return floorf(x); }
PYSLICE_HD double floor_of(double x) { return floor(x); }
PYSLICE_HD float sin_of(float x) { return sinf(x); }
PYSLICE_HD double sin_of(double x) { return sin(x); }
PYSLICE_HD float cos_of(float x) { return cosf(x); }
PYSLICE_HD double cos_of(double x) { return cos(x); }

template <typename T>
struct Pi {
  static constexpr T value = static_cast<T>(3.14159265358979323846);
  static constexpr T twice = static_cast<T>(6.28318530717958647692);
  static constexpr T half = static_cast<T>(1.57079632679489661923);
};

// x wrapped to [-pi, pi) in T: the expression of pyslice.geometry.angles.wrap_angle.
template <typename T>
PYSLICE_HD T wrap_angle(T x) {
  const T pi = Pi<T>::value;
  const T two_pi = Pi<T>::twice;
  T r = x - two_pi * floor_of((x + pi) / two_pi);
  if (r >= pi) r -= two_pi;
  if (r < -pi) r += two_pi;
  return r;
}

}  // namespace pyslice
