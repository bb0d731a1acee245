"""tifa"""
