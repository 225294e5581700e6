"""Network architectures: the ADM UNet and encoder classifier (``adm``, on the blocks of ``nn``),
Inception-V3 pool features (``inception``) and the digit feature CNN (``feature_net``); ``loading``
builds a preset's network from its config and weights spec."""
