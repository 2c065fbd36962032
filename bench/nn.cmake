# bench_ops: sgemm GFLOP/s at MLP shapes and the dense ops' throughput
# against that roofline (worker/nn). Run: build/bench/bench_ops [seconds]
add_executable(bench_ops ${CMAKE_CURRENT_SOURCE_DIR}/bench_ops.c)
target_link_libraries(bench_ops PRIVATE maskps_nn)
