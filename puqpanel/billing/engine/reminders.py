"""(filled by the helper)"""
