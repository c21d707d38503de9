"""Data: datasets (folders, zips, DICOM) and the SynthCXR generator's datasets."""
