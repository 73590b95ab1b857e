"""crawl2chat training: GPT model, DeepSpeed pretraining, export. Imports torch/deepspeed/mlflow/dagster_pipes only."""
