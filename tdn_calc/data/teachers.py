"""Moved: the teacher registry lives in :mod:`tdn_calc.teachers`; this re-exports it."""

from ..teachers import (  # noqa: F401
    KNOWN_TEACHERS,
    canonical_teacher_name,
    get_teacher,
    teacher_reference_method,
)
