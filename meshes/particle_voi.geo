// One Si particle (sphere) in a matrix cube: a particle-centred volume of interest.
// Open in the gmsh GUI (File > Open), change the parameters, Mesh > 3D.
// Lengths in um; z is the through-thickness axis (collector at z = 0).
// Physical groups follow anodetwin's tags: volumes 1 = particle id (1), 1000000 = matrix;
// surfaces 1 collector (z min), 2 separator (z max), 3/4 x min/max, 5/6 y min/max,
// 7 Si interface.
SetFactory("OpenCASCADE");

L = 15.0;        // VOI edge (reference: 15 um particle-centred cubes)
R = 3.5;         // particle radius
h = 1.0;         // element size in the matrix
hs = 0.3;        // element size on the particle surface

Box(1) = {0, 0, 0, L, L, L};
Sphere(2) = {L / 2, L / 2, L / 2, R};
v() = BooleanFragments{ Volume{1}; Delete; }{ Volume{2}; Delete; };
// v(0): the matrix with the hole, v(1): the particle
Physical Volume(1) = {v(1)};
Physical Volume(1000000) = {v(0)};

e = 1e-6;
Physical Surface(1) = Surface In BoundingBox{-e, -e, -e, L + e, L + e, e};
Physical Surface(2) = Surface In BoundingBox{-e, -e, L - e, L + e, L + e, L + e};
Physical Surface(3) = Surface In BoundingBox{-e, -e, -e, e, L + e, L + e};
Physical Surface(4) = Surface In BoundingBox{L - e, -e, -e, L + e, L + e, L + e};
Physical Surface(5) = Surface In BoundingBox{-e, -e, -e, L + e, e, L + e};
Physical Surface(6) = Surface In BoundingBox{-e, L - e, -e, L + e, L + e, L + e};
Physical Surface(7) = Boundary{ Volume{v(1)}; };

MeshSize{ PointsOf{ Volume{v(0)}; } } = h;
MeshSize{ PointsOf{ Volume{v(1)}; } } = hs;
