# bench_table: rows/s of maskps-table's import, migrate (S=2 -> 3, D=16),
# verify and export on a generated table (pserver/table.h).
# Run: build/bench/bench_table [rows] [workdir]   (default 2000000 /tmp)
add_executable(bench_table ${CMAKE_CURRENT_SOURCE_DIR}/bench_table.c)
target_link_libraries(bench_table PRIVATE maskps_store)
