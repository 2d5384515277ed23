"""Data: reading CSV and HDF5 files, label encoding, normalisation, splits and minibatches.

Inputs are float32 arrays shaped (examples, *input_shape). Targets reach the graph as
float32 matrices shaped like the network output: class labels are encoded (the encoding
goes into the checkpoint) and turned into one-hot rows. Every problem with a file is a
DataError naming the file and, where there is one, the row and column.

    table.py      Table (what a file gives), is_hdf5, preview
    csv.py        the one chunked CSV reader; dialects (delimiter), missing cells; header rules;
                  the columns a model reads
    jsonl.py      JSON-lines files, read into the same Chunks as a CSV
    columns.py    typed CSV columns: infer, impute, encode (COLUMN_TYPES), stored in the checkpoint
    hdf5.py       HDF5 datasets read whole, checked; XStream (training inputs read in blocks)
    files.py      read(): a file of either kind
    targets.py    Encoding, fit_encoding, encode_targets, decode, class_codes, class_probabilities
    target_column.py  a CSV target column read in chunks, held as int32 codes or float32 values
    normalize.py  Moments (the one running-moments accumulator), Normalizer
    batches.py    split and validation_mask, the Source protocol (Rows in memory, XStream on disk), batches

Other nncli modules import the package (`from nncli import data`) and use the names it
exports (`data.read`, `data.Normalizer`, ...); the parts import each other directly.
"""

from nncli.data.batches import Rows, Source, batches, source, split, validation_mask
from nncli.data.csv import (DELIMITERS, MISSING_VALUES, PREDICT_NO_HEADER_HINT, is_missing, model_columns,
                            read_chunks, rows_to_float, to_float)
from nncli.data.files import read
from nncli.data.hdf5 import XStream, block_ranges, budget_bytes, open_targets, should_stream, stored_completely
from nncli.data.normalize import Moments, Normalizer
from nncli.data.table import Table, is_hdf5
from nncli.data.targets import MAX_CLASSES, Encoding, UnitsMismatch, class_codes, class_probabilities, decode, encode_targets, fit_encoding

__all__ = ["DELIMITERS", "MISSING_VALUES", "is_missing", "MAX_CLASSES", "PREDICT_NO_HEADER_HINT", "Encoding", "Moments", "Normalizer", "Rows", "Source", "Table",
           "UnitsMismatch", "XStream", "batches", "block_ranges", "budget_bytes", "class_codes", "class_probabilities", "decode", "encode_targets",
           "fit_encoding", "is_hdf5", "model_columns", "open_targets", "read", "read_chunks", "should_stream",
           "rows_to_float", "source", "split", "stored_completely", "to_float", "validation_mask"]
