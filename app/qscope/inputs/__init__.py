"""What people send, taken safely: the number types of request models (`numbers`), the reader of uploaded
prompt and example files (`files`), and regular expressions run under a time limit (`patterns`).

A basics layer: nothing here imports another part of qscope, so every layer above (steer, discover, web) uses
the same rules.
"""
