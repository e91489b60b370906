#include "thread_pool.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
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

void reset_after_fork() { g_pool.store(nullptr); }  // leak the parent's pool: its threads are gone

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  std::lock_guard<std::mutex> lk(g_pool_mu);
  static bool registered = false;
  if (!registered) {
    pthread_atfork(nullptr, nullptr, &reset_after_fork);
    registered = true;
  }
  if (!g_pool.load()) g_pool.store(new Pool());
  return *g_pool.load();
}

}  // namespace

void parallel_run(int nthreads, const std::function<void(int)>& fn) {
  if (nthreads <= 1) {
    fn(0);
    return;
  }
  pool().run(nthreads, fn);
}

}  // namespace lowbit
