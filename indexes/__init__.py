"""Chunking, embedding, FAISS + BM25 search and the persistent KnowledgeBase."""
