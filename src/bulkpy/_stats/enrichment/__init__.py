"""Gene set enrichment engines.

=====================  =====================================================================
file                   what it follows
=====================  =====================================================================
``gsea.py``            fgsea's ``fgseaMultilevel`` (and ``fgseaSimple`` permutations): preranked
                       GSEA, enrichment scores, the adaptive multilevel p-values
``ora.py``             over-representation (hypergeometric test, clusterProfiler's ``enricher``)
``gsva.py``            GSVA's ``gsva`` (GSVA method and ``ssgsea``)
=====================  =====================================================================
"""
