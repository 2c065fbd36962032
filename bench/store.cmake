# bench_store: the shard store's pull+push keys/s against raw RocksDB
# read-modify-write (batched MultiGet + WriteBatch, and Get/Put) with the
# same memory budget, at a working set that fits the row cache and at a
# table 5x the budget; RSS over time, checkpoint GB/s, AMTL bytes per row.
# Run: build/bench/bench_store [memory_mb] [secs_per_rep] [reps] [workdir]
#      (default 64 3 3 /tmp; about 2 minutes)
add_executable(bench_store ${CMAKE_CURRENT_SOURCE_DIR}/bench_store.c)
target_link_libraries(bench_store PRIVATE maskps_store Threads::Threads)
