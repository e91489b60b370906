// Parallel regions for the CPU operator: parallel_run(n, fn) calls fn(0..n-1), each id
// exactly once, on up to n threads (the caller takes part), and returns when all are done.
//
// Where an OpenMP runtime is already loaded in the process (torch's libgomp, or libiomp5 /
// libomp), the region runs on *its* thread team, through the GOMP_parallel entry point that
// all three export, found at run time: the build does not link OpenMP. Sharing torch's team
// matters because its workers spin for milliseconds after every torch parallel op; a second
// pool's threads then fight them for the cores, and on 2 cores a W4 M=1 linear issued right
// after a torch op ran at ~60% of its speed (docs/cpu_kernels.md, "Threads").
// Otherwise (no OpenMP loaded: the C++ harness, or LOWBIT_CPU_POOL=own), and always in a
// fork() child (the parent's OpenMP team does not exist there), a small persistent pool of
// our own runs it: one region at a time, workers spin briefly after a region, then sleep.
#pragma once

#include <functional>
#include <string>

namespace lowbit {

void parallel_run(int nthreads, const std::function<void(int)>& fn);

// Which pool parallel_run uses: "openmp (<library file>)" or "lowbit".
std::string parallel_pool_name();

}  // namespace lowbit
