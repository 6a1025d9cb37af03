"""The breast foreground: burned-in text removal, masks and the QC verdict
(:mod:`.foreground`), chest-wall film strips (:mod:`.chestwall`), the QC contact sheet
(:mod:`.qc`)."""
