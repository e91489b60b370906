#include "thread_pool.h"

#include <pthread.h>

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define LOWBIT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define LOWBIT_PAUSE() asm volatile("yield")
#else
#define LOWBIT_PAUSE() ((void)0)
#endif

namespace lowbit {
namespace {

constexpr auto kSpin = std::chrono::microseconds(50);  // worker spin before sleeping

class Pool {
 public:
  void run(int n, const std::function<void(int)>& fn) {
    std::lock_guard<std::mutex> region(region_mu_);
    while (int(workers_.size()) < n - 1) {
      const int id = int(workers_.size()) + 1;
      // the worker must start from the generation *before* this region's increment, or a
      // late-starting thread would skip its first job and the region would never finish
      const uint64_t start = generation_.load(std::memory_order_acquire);
      workers_.emplace_back([this, id, start] { loop(id, start); });
      workers_.back().detach();  // the pool lives for the process; never joined
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      job_threads_ = n;
      pending_.store(n - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < 4096) LOWBIT_PAUSE();
      else std::this_thread::yield();
    }
  }

 private:
  void loop(int id, uint64_t seen) {
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until)
        LOWBIT_PAUSE();
      const std::function<void(int)>* job;
      int threads;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        seen = generation_.load(std::memory_order_acquire);
        job = job_;
        threads = job_threads_;
      }
      if (id < threads) {
        (*job)(id);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::mutex region_mu_, mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  int job_threads_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_mu;
// Set in a fork() child. Its OpenMP team is unusable there: the GNU runtime waits for the
// parent's workers, which do not exist in the child (torch's own parallel ops hang the same
// way), so a child runs its regions on a fresh pool of our own.
std::atomic<bool> g_forked{false};

void after_fork_in_child() {
  g_pool.store(nullptr);  // leak the parent's pool: its threads are gone
  g_forked.store(true);
}
// registered when the library loads, so a child forked before our first region knows it too
const bool g_atfork_registered = pthread_atfork(nullptr, nullptr, &after_fork_in_child) == 0;

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (!g_pool.load()) g_pool.store(new Pool());
  return *g_pool.load();
}

// ---- an OpenMP runtime already in the process ---------------------------------------------
// void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags): the
// GNU OpenMP ABI's "run fn(data) on a team of num_threads, the caller included, then join";
// libgomp defines it, and Intel's libiomp5 and LLVM's libomp export it for GCC-built code.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

struct OpenMp {
  GompParallel parallel = nullptr;
  std::string library;
};

#if defined(__linux__)
int find_openmp(dl_phdr_info* info, size_t, void* data) {
  auto* found = static_cast<std::string*>(data);
  const char* name = info->dlpi_name;
  const char* base = name ? std::strrchr(name, '/') : nullptr;
  base = base ? base + 1 : name;
  if (base && found->empty() &&
      (std::strncmp(base, "libgomp", 7) == 0 || std::strncmp(base, "libiomp5", 8) == 0 ||
       std::strncmp(base, "libomp", 6) == 0))
    *found = name;
  return 0;
}
#endif

OpenMp load_openmp() {
  OpenMp omp;
  const char* want = std::getenv("LOWBIT_CPU_POOL");
  if (want && std::strcmp(want, "own") == 0) return omp;
#if defined(__linux__)
  std::string path;
  dl_iterate_phdr(&find_openmp, &path);
  if (path.empty()) return omp;
  // RTLD_NOLOAD: a handle on the copy already mapped (torch's), never a second runtime
  void* h = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (!h) return omp;
  omp.parallel = reinterpret_cast<GompParallel>(dlsym(h, "GOMP_parallel"));
  if (omp.parallel) {
    const char* base = std::strrchr(path.c_str(), '/');
    omp.library = base ? base + 1 : path;
  }
#endif
  return omp;
}

// Looked up once, on the first parallel region (torch, and so its OpenMP, is loaded first).
const OpenMp& openmp() {
  static const OpenMp omp = load_openmp();
  return omp;
}

// One region on the OpenMP team: each member takes ids from a counter, so every id runs
// exactly once however many threads the runtime grants (fewer inside a nested region).
struct OmpRegion {
  const std::function<void(int)>* fn;
  int n;
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;  // the first exception; nothing may unwind through the runtime
};

void omp_member(void* p) {
  auto* r = static_cast<OmpRegion*>(p);
  for (int id; (id = r->next.fetch_add(1, std::memory_order_relaxed)) < r->n;) {
    try {
      (*r->fn)(id);
    } catch (...) {
      if (!r->failed.exchange(true)) r->error = std::current_exception();
    }
  }
}

// The OpenMP entry point regions run on here, or nullptr for our own pool.
GompParallel active_openmp() { return g_forked.load() ? nullptr : openmp().parallel; }

}  // namespace

void parallel_run(int nthreads, const std::function<void(int)>& fn) {
  if (nthreads <= 1) {
    fn(0);
    return;
  }
  if (const GompParallel par = active_openmp()) {
    OmpRegion r;
    r.fn = &fn;
    r.n = nthreads;
    par(&omp_member, &r, unsigned(nthreads), 0);
    if (r.error) std::rethrow_exception(r.error);
    return;
  }
  pool().run(nthreads, fn);
}

std::string parallel_pool_name() {
  return active_openmp() ? "openmp (" + openmp().library + ")" : "lowbit";
}

}  // namespace lowbit
