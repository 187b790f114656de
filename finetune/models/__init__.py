"""The models room: where a run's model comes from. The pretrained weights, random init and weights
files (``pretrained``), a model as a checkpoint describes it and rebuilt from that description
with the speed-ups and device it runs with (``specs``), and the demo's small Mask R-CNN
(``small_maskrcnn``).
"""
