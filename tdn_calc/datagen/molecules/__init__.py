"""The molecule pipeline: candidate molecules (``systems``), GFN2-xTB frames for one molecule
(``label``) and the resumable build (``build``, ``tdn data build molecules``)."""
