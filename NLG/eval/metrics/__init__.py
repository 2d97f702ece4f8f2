"""Built-in NLG metrics that reproduce the official E2E and WebNLG/DART scorers.

One module per metric; tokenizers live beside them because each official scorer tokenizes
differently (mteval-v13a for BLEU/NIST, Stanford PTB for the COCO metrics, NLTK's Treebank rules
for GenerationEval's METEOR/TER) and the numbers only agree when the same rules are used.
"""
