"""MNIST's image geometry, in a module of its own so the torch-free preprocessing, the data files and
the networks all read it from one place."""

IMAGE_SIZE = 28  # MNIST's images are 28x28 ...
DIGIT_BOX = 20  # ... each digit fitted into a 20x20 box, aspect ratio kept, and centred by mass
