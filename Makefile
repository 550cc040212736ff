.PHONY: install test slow bench
install:
	python -m pip install -e ".[dev]"
test:
	python -m pytest -q
slow:          # long tests kept out of the default suite
	python -m pytest -q -m slow
bench:
	python benchmarks/render_speed.py
	python benchmarks/scale.py
	python benchmarks/physics_settle.py
