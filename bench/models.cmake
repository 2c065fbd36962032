# bench_models: training-step throughput of the dense models (issue 3) and
# the fraction of sgemm they reach on their own shapes.
# Run: bench/run_models.sh (beside PyTorch) or build/bench/bench_models -h
add_executable(bench_models ${CMAKE_CURRENT_SOURCE_DIR}/bench_models.c)
target_link_libraries(bench_models PRIVATE maskps_nn)
# Every gemm() the models call goes through bench_models.c's __wrap_gemm,
# which records the shapes of one step for the sgemm replay (GNU ld).
target_link_options(bench_models PRIVATE -Wl,--wrap=gemm)
