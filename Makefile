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
	python benchmarks/vs_script.py
	python benchmarks/invariant_sweep.py
	python benchmarks/gpu_throughput.py --smoke
	python benchmarks/cpu_side.py
	python benchmarks/egl_frame.py
	python benchmarks/dice_bank.py
	python benchmarks/shadow_map.py
	python benchmarks/cv_threads.py
