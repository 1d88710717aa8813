"""Proof of Attribution: which training contributions shaped an answer, in exact integers.

Two signals, because each misses what the other sees:

- spans (:mod:`.spans` over :mod:`.suffix_array` and :mod:`.corpus`): the maximal runs of the
  answer's tokens found verbatim in the training data of the model's lineage, credited token
  by token to the examples holding them, rare tokens counting more and tokens the prompt
  already holds not at all (verbatim reuse of a contributor's text);
- gradients (:mod:`.gradients`, :mod:`.projection`, :mod:`.sketches`, run by
  :mod:`.sketcher`): per-example gradients of the loss with respect to the LoRA adapter of the
  top layers, projected by a seeded sparse projection, unit-normalized, TRAK-preconditioned on
  the training side and quantized to int16; an answer's sketch scores every training example
  by an exact integer inner product (paraphrased knowledge).

:mod:`.shares` turns both into integer shares per contribution (parts per million, with an
explicit unattributed part); :mod:`.scoring` makes the per-answer :mod:`.record`; :mod:`.index`
is the artifact ModelFactory builds (:mod:`.build`, over the model's :mod:`.lineage`) and
stores by CID; :mod:`.attributor` scores answers of a model version (the node) and
:mod:`.audit` re-checks a record from public inputs (auditors). Every setting that moves a
result is in :mod:`.settings` and committed in the index. The rules and their limits: the
README's "Proof of Attribution".
"""
