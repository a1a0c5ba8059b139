"""Benchmarks and machine checks: training throughput, transcription speed, the GPU check."""
