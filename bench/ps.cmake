# bench_ps: pull+push keys/s through the parameter-store interface over tcp
# loopback (1 client, 2 pserver threads) vs in-process (ps_local, 2 stores).
# Run: build/bench/bench_ps [seconds_per_case]
add_executable(bench_ps ${CMAKE_CURRENT_SOURCE_DIR}/bench_ps.c)
target_link_libraries(bench_ps PRIVATE maskps_store maskps_worker maskps_common
  Threads::Threads)
