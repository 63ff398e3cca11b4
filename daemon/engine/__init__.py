"""Fast generation engine: preallocated KV cache, continuous batching, CUDA graphs."""
