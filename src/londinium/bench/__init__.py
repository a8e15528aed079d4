"""`londinium bench`: measure a served model the way the field does.

    serve_bench.py   the load generator and vLLM's metrics (TTFT, TPOT, ITL, E2EL, throughput, goodput)
    report.py        bench/<name>/ results.json, report.md and plots; --compare tables
"""
