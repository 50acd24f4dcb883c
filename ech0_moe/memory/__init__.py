"""Memory along the data path: the store (`store`: Chroma plus the lexical index, under one
folder lock `lock`), ranking (`ranking`: pure fusion and MMR), ingestion (`ingest`) and the
knowledge base the graph uses (`kb`). Nothing here imports the graph."""
