"""MUSIC-AVQA knowledge (DESIGN.md §4): annotation files, the 42 answers in a fixed order, the 9 types.

annotations  parse and check the JSON files -> `Question`;  answers  ANSWERS, answer_index
question_types  TYPES, the paper's table columns and rows;  manifests  where the shipped data lies
"""

from avaf.shared.avqa.annotations import Question, load_annotation_dir, load_annotations, load_questions
from avaf.shared.avqa.answers import ANSWERS, answer_index
from avaf.shared.avqa.question_types import OVERALL, TYPES, type_index
from avaf.shared.errors import AnnotationError

__all__ = [
    "ANSWERS",
    "OVERALL",
    "TYPES",
    "AnnotationError",
    "Question",
    "answer_index",
    "load_annotation_dir",
    "load_annotations",
    "load_questions",
    "type_index",
]
