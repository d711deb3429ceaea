#pragma once
// EFF_HD marks functions written once for the host and the device (nvcc), plain functions for g++.
#ifndef EFF_HD
#if defined(__CUDACC__)
#define EFF_HD __host__ __device__
#else
#define EFF_HD
#endif
#endif
