"""Fine-tuning: methods (fft, lora, dp-fft, dp-lora), the shared trainer, checkpoints and run directories."""

from privtune.training.config import TrainConfig

__all__ = ["TrainConfig"]
