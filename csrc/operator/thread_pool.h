// A small persistent thread pool for the CPU operator (no OpenMP: the binding must not
// depend on, or fight with, the OpenMP runtime torch was built with).
//
// run(n, fn) calls fn(0..n-1) on n threads, the caller being thread 0, and returns when
// all are done. One region at a time (a mutex serializes concurrent callers). Workers spin
// briefly after a region (back-to-back layers wake them without a syscall), then sleep.
// After fork() the child gets a fresh pool (the parent's threads do not exist there).
#pragma once

#include <functional>

namespace lowbit {

void parallel_run(int nthreads, const std::function<void(int)>& fn);

}  // namespace lowbit
