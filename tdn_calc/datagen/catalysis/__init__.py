"""The catalysis pipeline: slabs, adsorbates, bulk and gas systems (``systems``), their
teacher relaxation and the resumable build (``build``, ``tdn data build catalysis``), and
displaced-adsorbate frames added to a built set (``displaced``, ``tdn data build displaced``)."""
