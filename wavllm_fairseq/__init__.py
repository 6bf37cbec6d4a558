"""(registration imports restored at integration)"""
