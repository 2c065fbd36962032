# bench_msg: wire-protocol encode/decode throughput of a PULL reply, and the
# same message over tcp loopback (common/msg, common/net).
# Run: build/bench/bench_msg [seconds]
add_executable(bench_msg ${CMAKE_CURRENT_SOURCE_DIR}/bench_msg.c)
target_link_libraries(bench_msg PRIVATE maskps_common)
