"""lenet: LeNet-5 on MNIST as a Lightning + Hydra experiment project.

Train with `python train.py`; load a trained model with `lenet.inference.load_model(run_dir)`.
"""

__version__ = "0.1.0"
