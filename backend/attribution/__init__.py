"""Proof of Attribution: which training contributions shaped an answer, in exact integers.

Two signals, because each misses what the other sees:

- spans (:mod:`.spans`, over :mod:`.suffix_array`): the maximal runs of the answer's tokens
  that occur verbatim in the training data of the model's lineage, credited token by token
  to the examples holding them, rare tokens counting more and tokens echoed from the prompt
  not at all (verbatim reuse of a contributor's text);
- gradients (:mod:`.gradients`, :mod:`.projection`, :mod:`.sketches`): the per-example
  gradient of the loss with respect to the LoRA adapter, projected by a seeded sparse
  projection, unit-normalized, preconditioned TRAK-style on the training side and quantized
  to int16; an answer's sketch scores every training example by an exact integer inner
  product (paraphrased knowledge).

:mod:`.shares` turns both into integer shares per contribution (parts per million, with an
explicit unattributed part); :mod:`.record` is the per-answer record and its digest;
:mod:`.index` the artifact ModelFactory builds (:mod:`.build`) and stores by CID; and
:mod:`.attributor` loads a model version's index and scores answers (node) or re-checks a
record (auditor). The rules and their limits are in the README's "Proof of Attribution".
"""
