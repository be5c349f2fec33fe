from django.urls import path

from studies import views

app_name = "studies"

urlpatterns = [
    path("", views.study_list_view, name="list"),
    path("studies/upload/", views.study_upload_view, name="upload"),
    path("studies/<int:pk>/", views.study_detail_view, name="detail"),
    path("studies/<int:pk>/review/", views.study_review_view, name="review"),
    path("studies/<int:pk>/requeue/", views.study_requeue_view, name="requeue"),
    path("studies/<int:pk>/reject/", views.study_reject_view, name="reject"),
    path("studies/<int:pk>/send-back/", views.study_send_back_view, name="send-back"),
    path("studies/<int:pk>/adjudicate/", views.study_adjudicate_view, name="adjudicate"),
    path("studies/<int:pk>/assign/", views.study_assign_view, name="assign"),
    path("review/", views.review_queue_view, name="queue"),
    path("review/read/", views.review_read_view, name="read"),
    path("dashboard/", views.dashboard_view, name="dashboard"),
    path("adjudication/", views.adjudication_queue_view, name="adjudication"),
    path("audit/", views.audit_trail_view, name="audit"),
]
