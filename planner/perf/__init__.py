"""The performance step: throughput, latency and KV-limited concurrency of a plan under a load.

model -> spec -> memory -> plan -> **performance** -> launch config -> verification. Pure modelling
in `shape` (what a step moves and computes), `step` (the step time), `service` (closed/open loop),
`capacity` (KV admission) and `fitting`; the coefficient file is read in `coefficients`; `api` and
`cli` are the edges. Never imports launch, verify or the CLI.
"""
