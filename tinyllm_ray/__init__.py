"""tinyllm-ray: distil the reasoning of several teacher LLMs into one small student, on Ray.

Importing this package is cheap on purpose: vLLM, DeepSpeed and ray.train are imported
only inside the actors and workers that use them (each costs 10-20 s cold).
"""

__version__ = "0.1.0"
