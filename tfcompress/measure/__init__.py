"""Measuring a .tflite file: its metric's inputs, latency, work and structure.

evaluate.py        running a .tflite over data in the LiteRT interpreter (no TensorFlow)
latency.py         batch-1 latency in a child process (_latency_worker.py), litert-benchmark's median
peak.py            the float32 matmul peak, roofline arithmetic, CPU instruction sets
macs.py            multiply-accumulates from a .tflite graph or a Keras model
tflite_graph.py    the operators, tensors and weights inside a .tflite (sparsity, clusters, 2:4)
bootstrap.py       a metric's bootstrap interval over test examples, and a paired one of a difference
"""
