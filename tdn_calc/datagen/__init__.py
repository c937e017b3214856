"""Data generation: the pipelines that label structures and write them as training data.

The two pipelines are parallel subpackages:

* :mod:`~tdn_calc.datagen.molecules`: organic molecules labelled with GFN2-xTB (``systems``:
  candidate molecules; ``label``: the frames of one molecule; ``build``: the build);
* :mod:`~tdn_calc.datagen.catalysis`: slabs, adsorbates, bulk and gas molecules labelled by
  a teacher potential (``systems``: the systems; ``build``: teacher relaxation and the
  build; ``displaced``: displaced-adsorbate frames added to a built set).

In both, ``systems`` chooses what to label and ``build`` drives the resumable, seeded,
multiprocess build into a directory of shards in the :mod:`tdn_calc.data` format
(``tdn data build molecules``, ``tdn data build catalysis``, ``tdn data build displaced``).
Beside them: the teachers come from :mod:`tdn_calc.teachers` (the registry), and
:mod:`~tdn_calc.datagen.workers` (pool worker setup, used by both builds).
"""
