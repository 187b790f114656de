"""The data room: the readers that turn a Penn-Fudan folder (``pennfudan``), a COCO instances file
(``coco``), a labelme folder (``labelme``) or a YOLO data.yaml (``yolo``) into the datasets of a
run (``formats``, ``loaders``), the image-file helpers they share (``image_files``), the one
home of COCO's polygon and RLE mask helpers (``masks``), and the synthetic datasets of the demo
and the tests (``synthetic``). It imports none of the rooms above it (speed-ups, models,
outputs, run).
"""
