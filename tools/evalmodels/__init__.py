"""Real trained models used by benchmarks and evaluations: loaders and model metrics, offline."""
